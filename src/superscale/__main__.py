from superscale.cli import main

main()
