"""HTTP only: routes, request/response schemas, auth, error mapping and the app factory.

Business logic lives in `engine`; nothing but the CLI wiring imports this package.
"""
