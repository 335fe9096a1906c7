from omsync.cli import main

main()
