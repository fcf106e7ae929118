//! Integration tests: Outrigger started in-process on 127.0.0.1:0 and driven over real
//! sockets, and real clients (the Docker engine's fluentd log driver, PyPI's fluent-logger).

mod harness;

mod backend;
mod bad_input;
mod clients;
mod crash;
mod deploy;
mod disk_buffer;
mod docker;
mod docker_export;
mod docker_image;
mod docker_memory;
mod elasticsearch;
mod enrich;
mod export;
mod file_source;
mod forward;
mod health;
mod health_command;
mod kube_api;
mod lifecycle;
mod loki;
mod memory;
mod order;
mod otlp;
mod self_telemetry;
mod structured;
