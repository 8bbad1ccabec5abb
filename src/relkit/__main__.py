from relkit.cli import main

main()
