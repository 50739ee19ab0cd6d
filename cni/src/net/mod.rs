//! Links, addresses and routes on the node and inside pod network namespaces.
