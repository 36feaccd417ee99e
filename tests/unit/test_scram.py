from sparkops.scram import make_verifier, verifier_matches


def test_verifier_round_trip():
    verifier = make_verifier("s3cret")
    assert verifier.startswith("SCRAM-SHA-256$4096:")
    assert verifier_matches(verifier, "s3cret")
    assert not verifier_matches(verifier, "S3cret")


def test_fixed_salt_is_deterministic():
    # Agreement with PostgreSQL's own verifiers is checked against a real server in
    # tests/db/test_scram_agreement.py.
    verifier = make_verifier("postgres", salt=b"saltsaltsaltsalt")
    assert verifier_matches(verifier, "postgres")
    assert verifier == make_verifier("postgres", salt=b"saltsaltsaltsalt")


def test_malformed_verifiers_do_not_match():
    for bad in (None, "", "md5abc", "SCRAM-SHA-256$x", "SCRAM-SHA-256$4096:!!$a:b"):
        assert not verifier_matches(bad, "postgres")
