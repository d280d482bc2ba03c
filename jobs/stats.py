"""spark-submit entry point of the statistics job: `spark-submit jobs/stats.py --lake LAKE_DIR ...`.

Takes exactly the options of `towerssl stats` (see `towerssl stats --help`).
"""

import sys

from towerssl.stats.job import main

if __name__ == "__main__":
    sys.exit(main())
