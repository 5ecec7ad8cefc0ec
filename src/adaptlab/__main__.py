from adaptlab.cli import main

main()
