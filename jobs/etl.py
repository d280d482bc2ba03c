"""spark-submit entry point of the ETL: `spark-submit jobs/etl.py --input RAW_DIR --lake LAKE_DIR ...`.

Takes exactly the options of `towerssl etl` (see `towerssl etl --help`).
"""

import sys

from towerssl.cli import main

if __name__ == "__main__":
    sys.exit(main(["etl", *sys.argv[1:]]))
