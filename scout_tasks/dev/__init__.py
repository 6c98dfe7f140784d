"""``scout-tasks dev``: the whole system in one terminal, with no server to install.

- :mod:`scout_tasks.dev.state`: where a project folder's dev state lives
  (``.scout/``) and the ``.scout/dev.json`` record other commands read;
- :mod:`scout_tasks.dev.postgres`: the project's PostgreSQL process (only
  ``dev`` starts or stops it; nothing outside this package imports it);
- :mod:`scout_tasks.dev.children`: its child processes (another account, die with dev);
- :mod:`scout_tasks.dev.tempdirs`: its folders in the system temp folder, claimed while
  used and pruned when stale;
- :mod:`scout_tasks.dev.run`: the command itself (servers, children, event tail).
"""
