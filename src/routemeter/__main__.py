from routemeter._cli import main

raise SystemExit(main())
