//! An embedded MQTT broker (rumqttd) on loopback: the stand-in platform for
//! `fitedge demo`, and the broker of the tests.
//!
//! rumqttd has no shutdown API and only logs a port it cannot bind, so the
//! broker runs on its own thread for the life of the process and is probed
//! with a real MQTT CONNECT before it is trusted.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use rumqttd::{Broker, Config, ConnectionSettings, RouterConfig, ServerSettings};

/// A running embedded broker.
#[derive(Debug, Clone, Copy)]
pub struct EmbeddedBroker {
    pub port: u16,
}

/// Starts a broker on a free loopback port and waits until it answers.
pub fn start() -> std::io::Result<EmbeddedBroker> {
    for _ in 0..5 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
            .local_addr()?
            .port();
        if let Ok(broker) = start_on(port) {
            return Ok(broker);
        }
    }
    Err(std::io::Error::other(
        "the embedded MQTT broker did not answer on any of 5 ports",
    ))
}

/// Starts a broker on loopback `port` and waits until it answers.
pub fn start_on(port: u16) -> std::io::Result<EmbeddedBroker> {
    let mut broker = Broker::new(config(SocketAddr::from((Ipv4Addr::LOCALHOST, port))));
    std::thread::Builder::new()
        .name(format!("mqtt-broker-{port}"))
        .spawn(move || {
            if let Err(e) = broker.start() {
                tracing::error!(message = "Embedded broker stopped.", error = %e);
            }
        })?;
    if probe(port, Duration::from_secs(5)) {
        Ok(EmbeddedBroker { port })
    } else {
        Err(std::io::Error::other(format!(
            "the embedded MQTT broker did not answer on port {port}"
        )))
    }
}

fn config(listen: SocketAddr) -> Config {
    let server = ServerSettings {
        name: "v4".into(),
        listen,
        tls: None,
        next_connection_delay_ms: 1,
        connections: ConnectionSettings {
            connection_timeout_ms: 10_000,
            max_payload_size: 1024 * 1024,
            max_inflight_count: 1000,
            auth: None,
            external_auth: None,
            dynamic_filters: true,
        },
    };
    Config {
        id: 0,
        router: RouterConfig {
            max_connections: 256,
            max_outgoing_packet_count: 1000,
            max_segment_size: 16 * 1024 * 1024,
            max_segment_count: 16,
            custom_segment: None,
            initialized_filters: None,
            shared_subscriptions_strategy: Default::default(),
        },
        v4: Some(HashMap::from([("v4".to_string(), server)])),
        ..Default::default()
    }
}

/// Sends an MQTT 3.1.1 CONNECT and waits for a CONNACK.
pub fn probe(port: u16, within: Duration) -> bool {
    probe_as(port, None, within)
}

/// Like [`probe`], logging in with `(username, password)` where the broker
/// has accounts.
pub fn probe_as(port: u16, account: Option<(&str, &str)>, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if try_connect(port, account).unwrap_or(false) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn try_connect(port: u16, account: Option<(&str, &str)>) -> std::io::Result<bool> {
    let mut stream = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_secs(1),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(1)))?;
    let field = |out: &mut Vec<u8>, text: &[u8]| {
        out.extend_from_slice(&(text.len() as u16).to_be_bytes());
        out.extend_from_slice(text);
    };
    let flags = if account.is_some() { 0xC2 } else { 0x02 };
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, flags, 0, 10];
    field(&mut body, b"fitedge-probe");
    if let Some((user, password)) = account {
        field(&mut body, user.as_bytes());
        field(&mut body, password.as_bytes());
    }
    let mut packet = vec![0x10];
    let mut len = body.len();
    loop {
        let byte = (len % 128) as u8;
        len /= 128;
        packet.push(if len > 0 { byte | 0x80 } else { byte });
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&body);
    stream.write_all(&packet)?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack)?;
    let _ = stream.write_all(&[0xE0, 0]); // DISCONNECT
    Ok(connack[0] == 0x20 && connack[3] == 0)
}
