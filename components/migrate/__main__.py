from llmemory_db.migrate.cli import main

raise SystemExit(main())
