//! The few fields outpost reads from certificates rustls has already verified (or that it
//! wrote itself): the subject's CN and O, as the API server reads a client certificate's
//! user and groups. A small DER walk: rustls and rcgen link no certificate parser.

/// A certificate's subject, as far as authentication cares.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject {
    pub common_name: Option<String>,
    pub organizations: Vec<String>,
}

const OID_CN: &[u8] = &[0x55, 0x04, 0x03];
const OID_O: &[u8] = &[0x55, 0x04, 0x0a];

/// One DER element: its tag, its contents and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n].iter().fold(0usize, |acc, &b| (acc << 8) | b as usize);
        (len, &rest[n..])
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

/// The elements of a constructed value, stopping at the first malformed one.
fn elements(mut input: &[u8]) -> impl Iterator<Item = (u8, &[u8])> {
    std::iter::from_fn(move || {
        let (tag, body, rest) = element(input)?;
        input = rest;
        Some((tag, body))
    })
}

/// The subject of a DER certificate; `None` if it is not one.
pub fn subject(cert: &[u8]) -> Option<Subject> {
    const SEQUENCE: u8 = 0x30;
    let (SEQUENCE, cert, _) = element(cert)? else { return None };
    let (SEQUENCE, tbs, _) = element(cert)? else { return None };
    let mut fields = elements(tbs).peekable();
    // [0] version, then serial, signature algorithm, issuer, validity, subject.
    if fields.peek().is_some_and(|(tag, _)| *tag == 0xa0) {
        fields.next();
    }
    let (SEQUENCE, name) = fields.nth(4)? else { return None };
    let mut subject = Subject::default();
    for (_, set) in elements(name).filter(|(tag, _)| *tag == 0x31) {
        for (_, attribute) in elements(set).filter(|(tag, _)| *tag == SEQUENCE) {
            let mut parts = elements(attribute);
            let (Some((0x06, oid)), Some((_, value))) = (parts.next(), parts.next()) else {
                continue;
            };
            let value = String::from_utf8_lossy(value).into_owned();
            if oid == OID_CN {
                subject.common_name = Some(value);
            } else if oid == OID_O {
                subject.organizations.push(value);
            }
        }
    }
    Some(subject)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cn_and_every_o_of_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x.invalid".into()]).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::OrganizationName, "view");
        params.distinguished_name.push(rcgen::DnType::CommonName, "alice");
        // rcgen keeps one value per type: the second O under its OID.
        let o = rcgen::DnType::CustomDnType(vec![2, 5, 4, 10]);
        params.distinguished_name.push(o, "admin");
        let cert = params.self_signed(&key).unwrap();
        assert_eq!(
            subject(cert.der()),
            Some(Subject {
                common_name: Some("alice".into()),
                organizations: vec!["view".into(), "admin".into()]
            })
        );
    }

    #[test]
    fn garbage_is_no_certificate() {
        for bad in [&b""[..], b"\x30", b"\x30\x85\xff\xff\xff\xff\xff", b"\x30\x02\x30\x00"] {
            assert_eq!(subject(bad), None, "{bad:?}");
        }
    }
}
