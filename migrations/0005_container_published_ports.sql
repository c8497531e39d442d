-- The ports Docker published for each container, as its agent reported them:
-- a proxy on another Docker host reaches the container at host_ip:host_port.
-- A JSON array of {container_port, protocol, host_ip, host_port}.
ALTER TABLE agent_containers
  ADD COLUMN published_ports jsonb NOT NULL DEFAULT '[]';
