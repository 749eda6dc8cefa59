"""``python -m mmtx.evaluate``: runs :func:`mmtx.evaluate.command.main`."""

import sys

from mmtx.evaluate.command import main

if __name__ == "__main__":
    from mmtx import launch

    launch.skip_absent_tpu()  # libtpu for mmtx.compile, on a host without TPU chips
    sys.exit(main(sys.argv))
