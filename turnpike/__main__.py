import sys

from turnpike.cli import main

sys.exit(main())
