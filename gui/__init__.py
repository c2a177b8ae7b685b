"""vmctl's desktop app (`vmctl gui`): a PySide6 window and a tray menu over vmctl's public API.

engine.py    the calls the app makes (Engine), and VmctlEngine on vmctl + docker-py
jobs.py      workers: every blocking call runs off the UI thread, cancellable
bridge.py    the one adapter: engine calls in, Qt signals out
app.py       the Desktop: window + tray + quick runs + quitting; `main`
*_view.py    the window's tabs; tray.py, quickrun.py, terminal.py, icons.py, prefs.py
"""
