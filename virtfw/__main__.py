from virtfw.cli.main import main

main()
