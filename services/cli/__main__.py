from netlapse.cli.main import main

raise SystemExit(main())
