"""The console's pages, one module per area of the navigation: sign-in, connections
(and expiring credentials), audit, keys, API keys, organizations.

Each module's class extends ``web.Pages`` and names its routes (``routes()``); app.py
puts them together with the error pages. A handler asks the vault with the signed-in
operator's key and renders what comes back: nothing is decided here that the API does
not decide.
"""
