from zerokv.cli import main

main()
