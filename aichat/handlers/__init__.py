"""HTTP handlers: validate, call the store, shape the JSON. One module per resource."""
