"""How an OAuth client proves itself to a provider's endpoint: HTTP Basic or body fields.

The client secret goes only into the request built here; nothing in this module
logs it or puts it into an exception.
"""

from __future__ import annotations

import base64
from urllib.parse import quote_plus

from singura_vault.domain.oauth import ClientAuthMethod
from singura_vault.providers.catalogue import OAuthClientConfig


def basic(user: str, password: str) -> str:
    """A plain HTTP Basic Authorization value (RFC 7617), as GitHub's grant API wants."""
    pair = f"{user}:{password}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


def authenticate(
    client: OAuthClientConfig, headers: dict[str, str], params: dict[str, str]
) -> None:
    """Add the client's credentials to a token-endpoint request as its auth method says.

    client_secret_basic form-urlencodes both parts before Basic (RFC 6749 §2.3.1);
    client_secret_post puts them among the request's parameters.
    """
    if client.auth_method is ClientAuthMethod.CLIENT_SECRET_BASIC:
        user = quote_plus(client.client_id, safe="")
        password = quote_plus(client.client_secret, safe="")
        headers["Authorization"] = basic(user, password)
    else:
        params["client_id"] = client.client_id
        params["client_secret"] = client.client_secret
