from udptrace.cli import main

raise SystemExit(main())
