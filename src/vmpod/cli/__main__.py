from vmpod.cli.main import main

raise SystemExit(main())
