"""The tabs of ``launcher ui``, one module each: Compose, Runs, Compare, Chat.

Each module has ``layout(t, ...)``, which builds the tab's components inside ``gr.Tabs`` and returns them as a
small dataclass, and ``wire(page, ...)``, which attaches the tab's handlers once every tab exists (the Runs
tab's refresh fills the other tabs' run selectors too). ``launcher.ui.app.build_app`` calls them in order.
"""
