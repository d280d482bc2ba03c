"""Pure PyTorch model: feature spec, towers, losses and self-supervised augmentations."""
