"""The DNS face (`swarm serve --dns HOST:PORT`): Consul's DNS names over the one lookup, UDP and TCP.

settings.py   what `swarm serve` sets (address, domain, TTL) and the bounds
names.py      what a question's name asks for: a service, a tag, a node, an SRV target
records.py    records made from what the lookup found: A, AAAA, CNAME, SRV, SOA
encode.py     a reply rendered to wire format by dnspython, truncated to fit
front.py      one datagram or TCP message in, one reply out; encoded replies cached
udp.py, tcp.py  the transports, with their bounds
listener.py   the sockets, bound before granian forks and served by its worker
"""
