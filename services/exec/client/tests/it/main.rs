//! The integration tests of the client binary alone, as a user runs it.
//! Its tests against a server are `wharf-execd`'s, which start one.

use wharf_testkit::docs;

#[test]
fn completions_and_a_man_page_come_from_the_binary() {
    docs::completions_and_man_page(env!("CARGO_BIN_EXE_wharf-exec"), "wharf-exec");
}
