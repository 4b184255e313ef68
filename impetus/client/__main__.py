import sys

from impetus.client.supervisor import main

sys.exit(main(sys.argv[1:]))
