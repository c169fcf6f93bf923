from djhpc.cli import main

main()
