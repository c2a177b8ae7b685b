from vmctl_agent.cli import main

raise SystemExit(main())
