"""``python -m lmlab``: the ``lmlab`` command (torchrun starts data-parallel workers this way)."""

import os
import sys

try:
    from lmlab.cli import main
except KeyboardInterrupt:  # (Ctrl-C at once: torchrun passes it to every worker)
    sys.exit(130)

code = main()
distributed = sys.modules.get("lmlab.neural.distributed")  # (imported by neural runs only)
if distributed is not None and distributed.joined_a_group:
    # A data-parallel worker leaves without interpreter teardown: C++ destructors running at exit
    # can still find gloo's threads joinable and abort (std::terminate) a rank whose run has
    # succeeded (seen under CPU load, in 2 of 4 runs of a 3-process job). By now its files are
    # written and closed and its process group is destroyed; only the streams need flushing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
sys.exit(code)
