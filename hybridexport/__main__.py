import sys

from hybridexport.cli import main

sys.exit(main())
