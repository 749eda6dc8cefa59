"""``python -m mmtx.evaluate``: runs :func:`mmtx.evaluate.command.main`."""

import sys

from mmtx.evaluate.command import main

if __name__ == "__main__":
    sys.exit(main(sys.argv))
