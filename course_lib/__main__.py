from course_lib.runtime.cli import main

raise SystemExit(main())
