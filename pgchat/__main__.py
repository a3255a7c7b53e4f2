from pgchat._entry import main

main()
