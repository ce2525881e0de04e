//! The device plugin API's messages (`k8s.io/kubelet/pkg/apis/deviceplugin/v1beta1/api.proto`),
//! encoded and decoded by hand: a handful of string, bool, map and repeated fields, with the
//! proto's field numbers. Unknown fields are skipped, as protobuf decoders do.

use std::collections::BTreeMap;

use crate::probe::grpc::{get_varint, put_varint};

pub const VERSION: &str = "v1beta1";
pub const REGISTER: &str = "/v1beta1.Registration/Register";
pub const GET_OPTIONS: &str = "/v1beta1.DevicePlugin/GetDevicePluginOptions";
pub const LIST_AND_WATCH: &str = "/v1beta1.DevicePlugin/ListAndWatch";
pub const ALLOCATE: &str = "/v1beta1.DevicePlugin/Allocate";
pub const GET_PREFERRED: &str = "/v1beta1.DevicePlugin/GetPreferredAllocation";
pub const PRE_START: &str = "/v1beta1.DevicePlugin/PreStartContainer";
pub const HEALTHY: &str = "Healthy";
pub const UNHEALTHY: &str = "Unhealthy";

/// A gRPC message frame: uncompressed flag, big-endian length, message.
pub fn frame(message: &[u8]) -> Vec<u8> {
    crate::probe::grpc::frame(message)
}

/// Splits the first complete frame off `buf`: its message, or `None` until one is complete.
/// `Err` for a compressed frame (we never offer a codec).
pub fn split_frame(buf: &mut Vec<u8>) -> Result<Option<Vec<u8>>, DecodeError> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err(DecodeError);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return Ok(None);
    }
    let message = buf[5..5 + len].to_vec();
    buf.drain(..5 + len);
    Ok(Some(message))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed protobuf message")]
pub struct DecodeError;

/// `DevicePluginOptions`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    pub pre_start_required: bool,
    pub get_preferred_allocation_available: bool,
}

/// `RegisterRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegisterRequest {
    pub version: String,
    /// The plugin's socket, relative to the device plugin directory.
    pub endpoint: String,
    pub resource_name: String,
    pub options: Option<Options>,
}

/// `Device` (topology is not read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    pub health: String,
}

/// `Mount`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mount {
    pub container_path: String,
    pub host_path: String,
    pub read_only: bool,
}

/// `DeviceSpec`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceSpec {
    pub container_path: String,
    pub host_path: String,
    pub permissions: String,
}

/// `ContainerAllocateResponse`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerAllocation {
    pub envs: BTreeMap<String, String>,
    pub mounts: Vec<Mount>,
    pub devices: Vec<DeviceSpec>,
    pub annotations: BTreeMap<String, String>,
    /// `cdi_devices`' names.
    pub cdi_devices: Vec<String>,
}

/// A message being written.
#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn bytes(&mut self, field: u64, v: &[u8]) -> &mut Self {
        put_varint(&mut self.0, field << 3 | 2);
        put_varint(&mut self.0, v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }
    /// proto3: an empty string is not written.
    fn string(&mut self, field: u64, v: &str) -> &mut Self {
        if !v.is_empty() {
            self.bytes(field, v.as_bytes());
        }
        self
    }
    fn varint(&mut self, field: u64, v: u64) -> &mut Self {
        if v != 0 {
            put_varint(&mut self.0, field << 3);
            put_varint(&mut self.0, v);
        }
        self
    }
    fn bool(&mut self, field: u64, v: bool) -> &mut Self {
        if v {
            put_varint(&mut self.0, field << 3);
            put_varint(&mut self.0, 1);
        }
        self
    }
    /// A `map<string, string>`: one entry message (key = 1, value = 2) per pair.
    fn map(&mut self, field: u64, m: &BTreeMap<String, String>) -> &mut Self {
        for (k, v) in m {
            let entry = Writer::default().string(1, k).string(2, v).done();
            self.bytes(field, &entry);
        }
        self
    }
    fn done(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

/// A field's value: varints and length-delimited ones (the only kinds these messages use);
/// fixed-width ones are skipped.
enum Value<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Fixed,
}

/// Calls `f` with each field of `m`.
fn fields<'a>(
    mut m: &'a [u8],
    mut f: impl FnMut(u64, Value<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    while !m.is_empty() {
        let key = get_varint(&mut m).ok_or(DecodeError)?;
        let value = match key & 7 {
            0 => Value::Varint(get_varint(&mut m).ok_or(DecodeError)?),
            1 => {
                m = m.get(8..).ok_or(DecodeError)?;
                Value::Fixed
            }
            2 => {
                let len = get_varint(&mut m).ok_or(DecodeError)? as usize;
                let v = m.get(..len).ok_or(DecodeError)?;
                m = &m[len..];
                Value::Bytes(v)
            }
            5 => {
                m = m.get(4..).ok_or(DecodeError)?;
                Value::Fixed
            }
            _ => return Err(DecodeError),
        };
        f(key >> 3, value)?;
    }
    Ok(())
}

fn text(v: &[u8]) -> Result<String, DecodeError> {
    String::from_utf8(v.to_vec()).map_err(|_| DecodeError)
}

fn entry(v: &[u8]) -> Result<(String, String), DecodeError> {
    let (mut k, mut val) = (String::new(), String::new());
    fields(v, |n, f| {
        match (n, f) {
            (1, Value::Bytes(b)) => k = text(b)?,
            (2, Value::Bytes(b)) => val = text(b)?,
            _ => {}
        }
        Ok(())
    })?;
    Ok((k, val))
}

impl Options {
    pub fn encode(&self) -> Vec<u8> {
        Writer::default()
            .bool(1, self.pre_start_required)
            .bool(2, self.get_preferred_allocation_available)
            .done()
    }
    pub fn decode(m: &[u8]) -> Result<Self, DecodeError> {
        let mut o = Options::default();
        fields(m, |n, f| {
            match (n, f) {
                (1, Value::Varint(v)) => o.pre_start_required = v != 0,
                (2, Value::Varint(v)) => o.get_preferred_allocation_available = v != 0,
                _ => {}
            }
            Ok(())
        })?;
        Ok(o)
    }
}

impl RegisterRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.string(1, &self.version).string(2, &self.endpoint).string(3, &self.resource_name);
        if let Some(o) = &self.options {
            w.bytes(4, &o.encode());
        }
        w.done()
    }
    pub fn decode(m: &[u8]) -> Result<Self, DecodeError> {
        let mut r = RegisterRequest::default();
        fields(m, |n, f| {
            match (n, f) {
                (1, Value::Bytes(b)) => r.version = text(b)?,
                (2, Value::Bytes(b)) => r.endpoint = text(b)?,
                (3, Value::Bytes(b)) => r.resource_name = text(b)?,
                (4, Value::Bytes(b)) => r.options = Some(Options::decode(b)?),
                _ => {}
            }
            Ok(())
        })?;
        Ok(r)
    }
}

/// `ListAndWatchResponse { repeated Device devices = 1; }`.
pub fn encode_devices(devices: &[Device]) -> Vec<u8> {
    let mut w = Writer::default();
    for d in devices {
        w.bytes(1, &Writer::default().string(1, &d.id).string(2, &d.health).done());
    }
    w.done()
}

pub fn decode_devices(m: &[u8]) -> Result<Vec<Device>, DecodeError> {
    let mut out = Vec::new();
    fields(m, |n, f| {
        if let (1, Value::Bytes(b)) = (n, f) {
            let mut d = Device::default();
            fields(b, |n, f| {
                match (n, f) {
                    (1, Value::Bytes(b)) => d.id = text(b)?,
                    (2, Value::Bytes(b)) => d.health = text(b)?,
                    _ => {}
                }
                Ok(())
            })?;
            out.push(d);
        }
        Ok(())
    })?;
    Ok(out)
}

/// A message of one `repeated string` field 1: `PreStartContainerRequest`,
/// `ContainerAllocateRequest`, `ContainerPreferredAllocationResponse`.
pub fn encode_ids(ids: &[String]) -> Vec<u8> {
    let mut w = Writer::default();
    for id in ids {
        w.bytes(1, id.as_bytes());
    }
    w.done()
}

pub fn decode_ids(m: &[u8]) -> Result<Vec<String>, DecodeError> {
    let mut ids = Vec::new();
    fields(m, |n, f| {
        if let (1, Value::Bytes(b)) = (n, f) {
            ids.push(text(b)?);
        }
        Ok(())
    })?;
    Ok(ids)
}

/// `AllocateRequest { repeated ContainerAllocateRequest container_requests = 1; }`, each
/// `{ repeated string devices_ids = 1; }`; `PreferredAllocationResponse` has the same shape.
pub fn encode_allocate_request(containers: &[Vec<String>]) -> Vec<u8> {
    let mut w = Writer::default();
    for ids in containers {
        w.bytes(1, &encode_ids(ids));
    }
    w.done()
}

pub fn decode_allocate_request(m: &[u8]) -> Result<Vec<Vec<String>>, DecodeError> {
    let mut out = Vec::new();
    fields(m, |n, f| {
        if let (1, Value::Bytes(b)) = (n, f) {
            out.push(decode_ids(b)?);
        }
        Ok(())
    })?;
    Ok(out)
}

/// `ContainerPreferredAllocationRequest`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreferredRequest {
    pub available: Vec<String>,
    pub must_include: Vec<String>,
    pub size: u32,
}

/// `PreferredAllocationRequest { repeated ContainerPreferredAllocationRequest
/// container_requests = 1; }`, each `{ repeated string available_deviceIDs = 1; repeated
/// string must_include_deviceIDs = 2; int32 allocation_size = 3; }`.
pub fn encode_preferred_request(containers: &[PreferredRequest]) -> Vec<u8> {
    let mut w = Writer::default();
    for c in containers {
        let mut r = Writer::default();
        for id in &c.available {
            r.bytes(1, id.as_bytes());
        }
        for id in &c.must_include {
            r.bytes(2, id.as_bytes());
        }
        r.varint(3, u64::from(c.size));
        w.bytes(1, &r.done());
    }
    w.done()
}

pub fn decode_preferred_request(m: &[u8]) -> Result<Vec<PreferredRequest>, DecodeError> {
    let mut out = Vec::new();
    fields(m, |n, f| {
        if let (1, Value::Bytes(b)) = (n, f) {
            let mut r = PreferredRequest::default();
            fields(b, |n, f| {
                match (n, f) {
                    (1, Value::Bytes(b)) => r.available.push(text(b)?),
                    (2, Value::Bytes(b)) => r.must_include.push(text(b)?),
                    (3, Value::Varint(v)) => r.size = v as u32,
                    _ => {}
                }
                Ok(())
            })?;
            out.push(r);
        }
        Ok(())
    })?;
    Ok(out)
}

impl ContainerAllocation {
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.map(1, &self.envs);
        for m in &self.mounts {
            let mount = Writer::default()
                .string(1, &m.container_path)
                .string(2, &m.host_path)
                .bool(3, m.read_only)
                .done();
            w.bytes(2, &mount);
        }
        for d in &self.devices {
            let spec = Writer::default()
                .string(1, &d.container_path)
                .string(2, &d.host_path)
                .string(3, &d.permissions)
                .done();
            w.bytes(3, &spec);
        }
        w.map(4, &self.annotations);
        for name in &self.cdi_devices {
            w.bytes(5, &Writer::default().string(1, name).done());
        }
        w.done()
    }

    fn decode(m: &[u8]) -> Result<Self, DecodeError> {
        let mut a = ContainerAllocation::default();
        fields(m, |n, f| {
            let Value::Bytes(b) = f else { return Ok(()) };
            match n {
                1 => {
                    let (k, v) = entry(b)?;
                    a.envs.insert(k, v);
                }
                2 => {
                    let mut mount = Mount::default();
                    fields(b, |n, f| {
                        match (n, f) {
                            (1, Value::Bytes(b)) => mount.container_path = text(b)?,
                            (2, Value::Bytes(b)) => mount.host_path = text(b)?,
                            (3, Value::Varint(v)) => mount.read_only = v != 0,
                            _ => {}
                        }
                        Ok(())
                    })?;
                    a.mounts.push(mount);
                }
                3 => {
                    let mut d = DeviceSpec::default();
                    fields(b, |n, f| {
                        match (n, f) {
                            (1, Value::Bytes(b)) => d.container_path = text(b)?,
                            (2, Value::Bytes(b)) => d.host_path = text(b)?,
                            (3, Value::Bytes(b)) => d.permissions = text(b)?,
                            _ => {}
                        }
                        Ok(())
                    })?;
                    a.devices.push(d);
                }
                4 => {
                    let (k, v) = entry(b)?;
                    a.annotations.insert(k, v);
                }
                5 => fields(b, |n, f| {
                    if let (1, Value::Bytes(b)) = (n, f) {
                        a.cdi_devices.push(text(b)?);
                    }
                    Ok(())
                })?,
                _ => {}
            }
            Ok(())
        })?;
        Ok(a)
    }
}

/// `AllocateResponse { repeated ContainerAllocateResponse container_responses = 1; }`.
pub fn encode_allocate_response(containers: &[ContainerAllocation]) -> Vec<u8> {
    let mut w = Writer::default();
    for c in containers {
        w.bytes(1, &c.encode());
    }
    w.done()
}

pub fn decode_allocate_response(m: &[u8]) -> Result<Vec<ContainerAllocation>, DecodeError> {
    let mut out = Vec::new();
    fields(m, |n, f| {
        if let (1, Value::Bytes(b)) = (n, f) {
            out.push(ContainerAllocation::decode(b)?);
        }
        Ok(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes as protoc encodes them (hand-checked field keys: 0x0a = field 1 string, 0x12 =
    /// field 2, 0x1a = field 3, 0x22 = field 4 message, 0x08/0x10 = bool fields 1/2).
    #[test]
    fn register_request_wire_format() {
        let r = RegisterRequest {
            version: "v1beta1".into(),
            endpoint: "d.sock".into(),
            resource_name: "example.com/dev".into(),
            options: Some(Options {
                pre_start_required: false,
                get_preferred_allocation_available: true,
            }),
        };
        let bytes = r.encode();
        let mut expected = vec![0x0a, 7];
        expected.extend_from_slice(b"v1beta1");
        expected.extend_from_slice(&[0x12, 6]);
        expected.extend_from_slice(b"d.sock");
        expected.extend_from_slice(&[0x1a, 15]);
        expected.extend_from_slice(b"example.com/dev");
        expected.extend_from_slice(&[0x22, 2, 0x10, 1]);
        assert_eq!(bytes, expected);
        assert_eq!(RegisterRequest::decode(&bytes), Ok(r));
        // An unknown varint field (9) and a fixed64 one (10) are skipped.
        let mut with_unknown = bytes.clone();
        with_unknown.extend_from_slice(&[0x48, 5, 0x51, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(RegisterRequest::decode(&with_unknown).unwrap().endpoint, "d.sock");
        assert_eq!(RegisterRequest::decode(&[0x0a, 7, b'v']), Err(DecodeError), "truncated");
    }

    #[test]
    fn devices_and_allocations_round_trip() {
        let devices = vec![
            Device { id: "dev0".into(), health: HEALTHY.into() },
            Device { id: "dev1".into(), health: UNHEALTHY.into() },
        ];
        let bytes = encode_devices(&devices);
        assert_eq!(&bytes[..4], [0x0a, 15, 0x0a, 4], "{{id (2 + 4), health (2 + 7)}}");
        assert_eq!(decode_devices(&bytes), Ok(devices));
        assert_eq!(decode_devices(&[]), Ok(vec![]));

        let req = vec![vec!["dev0".to_string(), "dev1".to_string()], vec![]];
        let bytes = encode_allocate_request(&req);
        assert_eq!(bytes, b"\x0a\x0c\x0a\x04dev0\x0a\x04dev1\x0a\x00");
        assert_eq!(decode_allocate_request(&bytes), Ok(req));

        let a = ContainerAllocation {
            envs: [("DEV".to_string(), "dev0".to_string())].into(),
            mounts: vec![Mount {
                container_path: "/c".into(),
                host_path: "/h".into(),
                read_only: true,
            }],
            devices: vec![DeviceSpec {
                container_path: "/dev/dev0".into(),
                host_path: "/dev/null".into(),
                permissions: "rw".into(),
            }],
            annotations: [("a".to_string(), "b".to_string())].into(),
            cdi_devices: vec!["vendor.com/dev=0".into()],
        };
        let bytes = encode_allocate_response(std::slice::from_ref(&a));
        // envs: field 1 entry {key "DEV", value "dev0"}.
        assert_eq!(&bytes[2..15], b"\x0a\x0b\x0a\x03DEV\x12\x04dev0");
        assert_eq!(decode_allocate_response(&bytes), Ok(vec![a]));
    }

    #[test]
    fn preferred_allocation_wire_format() {
        let r = PreferredRequest {
            available: vec!["a".into(), "b".into()],
            must_include: vec!["a".into()],
            size: 2,
        };
        let bytes = encode_preferred_request(std::slice::from_ref(&r));
        assert_eq!(bytes, b"\x0a\x0b\x0a\x01a\x0a\x01b\x12\x01a\x18\x02");
        assert_eq!(decode_preferred_request(&bytes), Ok(vec![r]));
        assert_eq!(encode_ids(&["x".into()]), b"\x0a\x01x");
    }

    #[test]
    fn frames_split_when_complete() {
        let mut buf = frame(&[1, 2, 3]);
        buf.extend_from_slice(&frame(&[4])[..3]);
        assert_eq!(split_frame(&mut buf), Ok(Some(vec![1, 2, 3])));
        assert_eq!(split_frame(&mut buf), Ok(None));
        buf.extend_from_slice(&[0, 1, 4]);
        assert_eq!(split_frame(&mut buf), Ok(Some(vec![4])));
        assert!(buf.is_empty());
        assert_eq!(split_frame(&mut vec![1, 0, 0, 0, 0]), Err(DecodeError));
    }
}
