from fusebox.cli.main import main

main()
