"""`python -m eventpipe`: the same as the `eventpipe` console script (how tests and `eventpipe dev`
spawn it, with the interpreter they run under)."""

import sys

from eventpipe.cli import main

sys.exit(main())
