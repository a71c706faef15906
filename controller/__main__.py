"""``python -m controller`` is ``peergrid``."""

import sys

from controller.cli import main

sys.exit(main())
