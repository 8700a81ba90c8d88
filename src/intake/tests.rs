//! Intake rules, table-driven, over a map of cases instead of the store.
