"""The operator console: a small web application, in a process of its own, that shows
what the vault's API shows, to an operator signed in with an API key.

It is a gRPC client of the vault like any other (``vault_client``), with the signed-in
operator's key, so it sees exactly what that key may see: an organization key sees its
organization, and the API refuses the rest. It serves server-rendered HTML (Starlette,
Jinja2 with autoescaping) on ``SINGURA_CONSOLE_LISTEN``.

What it must never do: import the key package or reach the database (import-linter
contracts in pyproject.toml hold that), put an API key or any secret value into a page
other than the one that shows a newly created key once, or into a log event, a URL or a
cookie. The operator's key stays in this process's memory (``sessions``); the browser
holds only a random session id.
"""
