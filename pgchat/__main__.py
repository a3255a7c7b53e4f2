from pgchat.cli import main

main()
