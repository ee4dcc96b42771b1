"""Coca AI platform library: the one implementation of each runtime concern shared by all services.

Modules: ``settings observability errors web db cache kafka amqp envelope auth identity rpc
httpclient eventlog localinfra testing``. Nothing here imports a service package.
"""
