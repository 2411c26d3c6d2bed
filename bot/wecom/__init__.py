"""WeCom adapters: callback crypto and parsing, and the async outbound API client."""
