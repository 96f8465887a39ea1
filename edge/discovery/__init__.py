"""Finding printers on this machine and its network: USB scans and mDNS browsing."""
