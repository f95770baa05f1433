//! Population and quality-model properties.

mod common;

use std::collections::HashSet;

use enrichd_sim::*;

fn phone_ok(country: &str, phone: &str) -> bool {
    let Some(d) = phone.strip_prefix('+') else {
        return false;
    };
    if !d.chars().all(|c| c.is_ascii_digit()) {
        return false;
    }
    let b = d.as_bytes();
    let nsn = match country {
        "US" | "CA" => {
            d.len() == 11
                && d.starts_with('1')
                && (b'2'..=b'9').contains(&b[1])
                && (b'2'..=b'9').contains(&b[4])
                && !(b[2] == b'1' && b[3] == b'1')
        }
        "GB" => d.len() == 12 && d.starts_with("447"),
        "FR" => d.len() == 11 && (d.starts_with("336") || d.starts_with("337")),
        "DE" => {
            (d.len() == 12 || d.len() == 13)
                && (d.starts_with("4915") || d.starts_with("4916") || d.starts_with("4917"))
        }
        "ES" => d.len() == 11 && d.starts_with("346"),
        "NL" => d.len() == 11 && d.starts_with("316"),
        "AU" => d.len() == 11 && d.starts_with("614"),
        _ => false,
    };
    let cc = if country == "US" || country == "CA" {
        1
    } else {
        2
    };
    let national = &d[cc..];
    let all_same = national.chars().all(|c| national.starts_with(c));
    nsn && !all_same
}

#[test]
fn deterministic_per_seed() {
    let a = Population::generate(42, 4000);
    let b = Population::generate(42, 4000);
    let c = Population::generate(43, 4000);
    let ja = serde_json::to_string(a.people()).unwrap();
    assert_eq!(ja, serde_json::to_string(b.people()).unwrap());
    assert_ne!(ja, serde_json::to_string(c.people()).unwrap());
    assert_eq!(a.len(), 4000);
    assert_eq!(a.seed(), 42);
    assert_eq!(a.person(17).index, 17);
}

#[test]
fn unique_identities_and_valid_phones() {
    let pop = Population::generate(11, 20_000);
    let mut ids = HashSet::new();
    let mut work = HashSet::new();
    let mut personal = HashSet::new();
    let mut linkedin = HashSet::new();
    let mut phones = HashSet::new();
    let mut countries = std::collections::BTreeMap::<String, usize>::new();
    let mut domains = HashSet::new();
    for p in pop.people() {
        assert!(ids.insert((
            p.first_name.to_lowercase(),
            p.last_name.to_lowercase(),
            p.domain.clone()
        )));
        assert!(work.insert(p.work_email.clone()), "{}", p.work_email);
        assert!(personal.insert(p.personal_email.clone()));
        assert!(linkedin.insert(p.linkedin_url.clone()));
        assert!(phones.insert(p.phone.clone()));
        assert!(phone_ok(&p.country, &p.phone), "{} {}", p.country, p.phone);
        assert_eq!(p.work_email, p.work_email.to_lowercase());
        assert!(p.work_email.ends_with(&format!("@{}", p.domain)));
        assert!(is_webmail_domain(
            p.personal_email.split('@').nth(1).unwrap()
        ));
        assert!(p.linkedin_url.starts_with("https://www.linkedin.com/in/"));
        assert_eq!(p.linkedin_url, p.linkedin_url.to_lowercase());
        assert!(p.icp_score <= 99);
        assert!(
            [
                "c_suite",
                "vp",
                "director",
                "manager",
                "individual_contributor"
            ]
            .contains(&p.seniority.as_str())
        );
        *countries.entry(p.country.clone()).or_default() += 1;
        domains.insert(p.domain.clone());
    }
    let us = countries["US"] as f64 / pop.len() as f64;
    assert!((0.35..0.65).contains(&us), "US share {us}");
    for c in ["GB", "FR", "DE", "CA", "ES", "NL", "AU"] {
        assert!(countries.get(c).copied().unwrap_or(0) > 0, "{c} missing");
    }
    assert_eq!(pop.company_count(), 1000);
    assert!(domains.len() > 800, "{} companies used", domains.len());
    let catch_all = domains
        .iter()
        .filter(|d| pop.is_catch_all_domain(d))
        .count() as f64
        / domains.len() as f64;
    assert!(
        (0.05..0.15).contains(&catch_all),
        "catch-all share {catch_all}"
    );
    // Patterns vary across companies.
    let dotted = pop
        .people()
        .iter()
        .filter(|p| {
            p.work_email
                .starts_with(&format!("{}.", p.first_name.to_lowercase()))
        })
        .count();
    assert!(dotted > 0 && dotted < pop.len() * 9 / 10);
}

#[test]
fn lookups_are_tolerant() {
    let pop = Population::generate(5, 3000);
    for p in pop.people().iter().step_by(7) {
        let i = Some(p.index);
        let up = |s: &str| s.to_uppercase();
        assert_eq!(
            pop.find_by_name_domain(
                &up(&p.first_name),
                &p.last_name,
                &format!("https://www.{}/", p.domain)
            )
            .map(|x| x.index),
            i
        );
        assert_eq!(
            pop.find_by_name_company(
                &p.first_name,
                &up(&p.last_name),
                &p.company_name.to_lowercase()
            )
            .map(|x| x.index),
            i
        );
        let slug = p.linkedin_url.rsplit('/').next().unwrap();
        for url in [
            p.linkedin_url.clone(),
            format!("linkedin.com/in/{slug}/"),
            format!("http://LinkedIn.com/in/{}?trk=abc", up(slug)),
            format!("www.linkedin.com/in/{slug}"),
        ] {
            assert_eq!(pop.find_by_linkedin(&url).map(|x| x.index), i, "{url}");
        }
        assert_eq!(pop.find_by_email(&up(&p.work_email)).map(|x| x.index), i);
        assert_eq!(pop.find_by_email(&p.personal_email).map(|x| x.index), i);
        assert_eq!(pop.email_truth(&p.work_email), EmailTruth::Valid);
        assert_eq!(pop.email_truth(&p.personal_email), EmailTruth::Valid);
        let other = format!("zz.nobody.{}@{}", p.index, p.domain);
        let expected = if pop.is_catch_all_domain(&p.domain) {
            EmailTruth::CatchAll
        } else {
            EmailTruth::Invalid
        };
        assert_eq!(pop.email_truth(&other), expected);
    }
    assert!(
        pop.find_by_name_domain("Nobody", "Atall", "nowhere.example")
            .is_none()
    );
    assert_eq!(
        pop.email_truth("someone@unknown-domain.example"),
        EmailTruth::Invalid
    );
    assert!(!pop.is_catch_all_domain("gmail.com"));
    let f = pop.person(3).crm_fields();
    for k in [
        "firstname",
        "lastname",
        "company",
        "company_domain",
        "jobtitle",
        "seniority",
        "country",
        "numemployees",
        "icp_score",
    ] {
        assert!(f.get(k).and_then(|v| v.as_str()).is_some(), "{k}");
    }
    assert_eq!(f.len(), 9);
    assert_eq!(pop.person(3).truth(SimChannel::Phone), pop.person(3).phone);
}

#[test]
fn hundred_thousand_people() {
    let t = std::time::Instant::now();
    let pop = Population::generate(1, 100_000);
    assert_eq!(pop.len(), 100_000);
    let p = pop.person(99_999);
    assert_eq!(
        pop.find_by_name_domain(&p.first_name, &p.last_name, &p.domain)
            .map(|x| x.index),
        Some(99_999)
    );
    eprintln!("100k people in {:?}", t.elapsed());
}

#[test]
fn quality_model_is_fixed_independent_and_calibrated() {
    let pop = Population::generate(3, 6000);
    let q = Quality::new(0.7, 0.8, 0.6, 0.1);
    let prof = ProviderProfile::uniform(&[(SimChannel::WorkEmail, q), (SimChannel::Phone, q)]);
    let (mut covered, mut correct, mut verified_correct, mut eligible) = (0, 0, 0, 0);
    let mut same_as_other = 0;
    for p in pop.people() {
        let k = prof.knows(&pop, "alpha", p.index, SimChannel::WorkEmail);
        assert_eq!(k, prof.knows(&pop, "alpha", p.index, SimChannel::WorkEmail));
        let other = prof.knows(&pop, "beta", p.index, SimChannel::WorkEmail);
        if k.is_some() == other.is_some() {
            same_as_other += 1;
        }
        assert!(
            prof.knows(&pop, "alpha", p.index, SimChannel::LinkedinUrl)
                .is_none()
        );
        let Some(k) = k else { continue };
        covered += 1;
        let catch_all = pop.is_catch_all_domain(&p.domain);
        if catch_all {
            assert_eq!(k.word, Word::CatchAll);
        }
        if k.correct {
            correct += 1;
            assert_eq!(k.value, p.work_email);
            if !catch_all {
                eligible += 1;
                if k.word == Word::Verified {
                    verified_correct += 1;
                }
            }
        } else {
            assert_ne!(k.value, p.work_email);
            assert!(k.value.ends_with(&format!("@{}", p.domain)));
            assert_ne!(pop.email_truth(&k.value), EmailTruth::Valid);
        }
        if let Some(ph) = prof.knows(&pop, "alpha", p.index, SimChannel::Phone)
            && !ph.correct
        {
            assert_ne!(ph.value, p.phone);
            assert!(pop.find_by_phone(&ph.value).is_none());
            assert!(
                phone_ok(&p.country, &ph.value),
                "{} {}",
                p.country,
                ph.value
            );
        }
    }
    let n = pop.len() as f64;
    let cov = covered as f64 / n;
    let acc = correct as f64 / covered as f64;
    let ver = verified_correct as f64 / eligible as f64;
    assert!((cov - 0.7).abs() < 0.03, "coverage {cov}");
    assert!((acc - 0.8).abs() < 0.03, "accuracy {acc}");
    assert!((ver - 0.6).abs() < 0.04, "verified share {ver}");
    // Independent across provider names: agreement ~ 0.7^2 + 0.3^2 = 0.58, not 1.
    let agree = same_as_other as f64 / n;
    assert!(agree < 0.7, "providers agree too often: {agree}");
}

#[test]
fn segment_overrides_win() {
    let pop = Population::generate(3, 3000);
    let prof = ProviderProfile::uniform(&[(SimChannel::Phone, Quality::perfect())]).with_segment(
        SegmentField::Country,
        "de",
        SimChannel::Phone,
        Quality::none(),
    );
    for p in pop.people() {
        let k = prof.knows(&pop, "x", p.index, SimChannel::Phone);
        assert_eq!(k.is_some(), p.country != "DE");
    }
    for kind in ProviderKind::ALL {
        let d = ProviderProfile::default_for(kind);
        let json = serde_json::to_string(&d).unwrap();
        let back: ProviderProfile = serde_json::from_str(&json).unwrap();
        assert_eq!(back.channels.len(), d.channels.len());
    }
}
