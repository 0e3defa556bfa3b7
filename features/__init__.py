"""Events and the features computed from them, online (Redis) and offline (event logs).

Modules:
    events    -- the event envelope and the platform's typed event schema, with validation
    geoip     -- the IP-to-country/network resolver shipped for the simulated address ranges
    spec      -- the feature spec: entities, windowed aggregations, derived fields; its version
    offline   -- the vectorised point-in-time feature matrix of an event log
    online    -- the Redis online store: apply events, read a request's vector in one round trip
    log       -- reading and writing event logs (Parquet, JSON Lines)

Errors (all subclasses of `FeatureError`, each with a stable `code`):
    FeatureError
    ├── InvalidEvent           an event of unknown type or with a bad field (names both)
    ├── InvalidSpec            a feature spec entry that does not validate (names the entry)
    ├── InvalidEventLog        a log that cannot be read or lacks what the spec needs
    └── FeatureStoreUnavailable  Redis did not answer

This package imports nothing from the other Arbiter packages.
"""
