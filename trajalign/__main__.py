import sys

from trajalign.cli import main

sys.exit(main())
