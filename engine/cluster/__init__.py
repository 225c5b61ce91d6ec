"""cluster: the Ray executor, the bridge process, the node actor and Ray Train ranks, behind the
same spec and event-log contract as local workers. Imports training and setup.
"""
