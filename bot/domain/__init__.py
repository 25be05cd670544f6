"""Plain values every layer shares: money, budget periods, job states. Imports nothing of Castbot's
but other values here, so the store, the adapters, the services and the UI can all rely on it."""
