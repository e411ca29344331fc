"""Domain records shared by the service and repository layers, one module per area.

Plain frozen dataclasses and enums: no protobuf, no asyncpg. The API layer maps them to
and from messages; repositories build them from rows. Import a type from its area
module (``singura_vault.domain.credentials``, ``.connections``, ``.oauth``, ...); this
package re-exports nothing, so an import says which area a type belongs to.
"""
