import sys

from metricslam.cli import main

sys.exit(main())
