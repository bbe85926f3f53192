//! The telnet server side of a VM's serial console: what a new client is sent first, what is
//! stripped from its input before the guest sees it, and how guest output is escaped for it.
//!
//! It does what QEMU's telnet chardev (`-serial telnet:…,server=on`, chardev/char-socket.c)
//! does, so a viewer sees the same session, but binary-safe where QEMU is not: QEMU writes
//! guest output unescaped, so a guest's byte 255 starts a telnet command at the client; its
//! parser takes every command other than IAC IAC and IAC BRK for three bytes, so IAC NOP eats
//! a keystroke, and a subnegotiation's payload (a client's window size) reaches the guest.
//!
//! Written by hand: a console server needs a small subset of telnet, a resumable state machine
//! of a few states. The crates looked at (libtelnet-rs, libmudtelnet, telnet) are clients' or
//! MUDs' full option engines that allocate their events per read.

/// Interpret As Command: starts every telnet command; doubled, it is a data byte 255.
const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
/// Subnegotiation Begin, ended by IAC SE.
const SB: u8 = 250;
const BRK: u8 = 243;
const SE: u8 = 240;
const CR: u8 = b'\r';
const NUL: u8 = 0;

const ECHO: u8 = 1;
/// Suppress Go Ahead.
const SGA: u8 = 3;
const BINARY: u8 = 0;

/// What the server sends a new client first: the negotiation QEMU's telnet server sends
/// (character at a time, server echoes, binary both ways). WILL ECHO: the guest echoes, so the
/// client must not; WILL SUPPRESS-GO-AHEAD: with it, the client sends each key as typed, not
/// by line; WILL and DO BINARY: neither side rewrites CR or 8-bit bytes. The client's answers
/// are dropped unanswered by [`Decoder`], as QEMU does: nothing here depends on them.
pub const NEGOTIATION: &[u8] = &[
    IAC, WILL, ECHO, IAC, WILL, SGA, IAC, WILL, BINARY, IAC, DO, BINARY,
];

/// What a client asked beyond data. QEMU knows only the break: on IAC BRK it raises
/// `CHR_EVENT_BREAK` to the serial device, which its 16550 model turns into a received break
/// (the break bit of the line status register, a NUL in the FIFO); Linux's magic SysRq on a
/// serial console is a break followed by a key. Interrupt Process and the rest it drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Break,
}

/// Where the decoder is between two bytes; kept across calls, so a sequence split across
/// reads is handled as if it came in one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum State {
    #[default]
    Data,
    /// After a data CR: a NUL now is the telnet end of line's padding.
    Cr,
    /// After IAC.
    Command,
    /// After IAC WILL, WONT, DO or DONT: the next byte is the option's code.
    Option,
    /// Inside IAC SB … IAC SE.
    Sub,
    /// After IAC inside a subnegotiation.
    SubCommand,
}

/// Client input -> bytes for the guest. Resumable: a sequence split across reads is handled
/// (state kept between calls).
#[derive(Debug, Default)]
pub struct Decoder {
    state: State,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Appends the data bytes of `input` to `out`, up to the end of `input` or its first
    /// event, and returns how many bytes of `input` it took and that event. Stopping at an
    /// event keeps the client's order: the data before a break is in `out` when the break is
    /// returned, to be written to the guest before the break is sent. With `input` not empty
    /// at least one byte is taken, so a caller's loop on the rest always ends.
    ///
    /// IAC IAC is one data byte 255. IAC WILL/WONT/DO/DONT and their option, IAC SB … IAC SE,
    /// and any other IAC command are dropped. CR NUL is CR: a client not in binary mode ends
    /// a line so (RFC 854). QEMU passes that NUL to the guest; it is stripped here since no
    /// guest wants it, which costs a binary client the rare CR NUL in its data.
    #[must_use]
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> (usize, Option<Event>) {
        let mut i = 0;
        while i < input.len() {
            let byte = input[i];
            i += 1;
            self.state = match self.state {
                State::Data | State::Cr if byte == IAC => State::Command,
                State::Cr if byte == NUL => State::Data,
                State::Data | State::Cr => {
                    out.push(byte);
                    if byte == CR {
                        State::Cr
                    } else {
                        // Data comes in runs: copy up to the next byte that needs a look.
                        let rest = &input[i..];
                        let run = rest.iter().position(|&b| b == IAC || b == CR);
                        let run = run.unwrap_or(rest.len());
                        out.extend_from_slice(&rest[..run]);
                        i += run;
                        State::Data
                    }
                }
                State::Command => match byte {
                    IAC => {
                        out.push(IAC);
                        State::Data
                    }
                    WILL | WONT | DO | DONT => State::Option,
                    SB => State::Sub,
                    BRK => {
                        self.state = State::Data;
                        return (i, Some(Event::Break));
                    }
                    // NOP, AYT, GA, IP, a stray SE and the rest: two bytes, dropped.
                    _ => State::Data,
                },
                State::Option => State::Data,
                State::Sub if byte == IAC => State::SubCommand,
                State::Sub => State::Sub,
                State::SubCommand => match byte {
                    SE => State::Data,
                    // A 255 in the subnegotiation's data.
                    IAC => State::Sub,
                    // IAC and another command inside a subnegotiation: as BSD telnetd does,
                    // the subnegotiation ends and the command is taken as one, so a client
                    // that never sends SE cannot stall its input for good.
                    _ => {
                        i -= 1;
                        State::Command
                    }
                },
            };
        }
        (i, None)
    }
}

/// Guest output -> bytes for a telnet client: every 0xFF doubled (RFC 854: in binary mode a
/// data byte 255 is sent as IAC IAC). QEMU does not double it, so there a guest's 255 began a
/// command at the client.
pub fn encode(data: &[u8], out: &mut Vec<u8>) {
    out.reserve(data.len());
    for chunk in data.split_inclusive(|&b| b == IAC) {
        out.extend_from_slice(chunk);
        if chunk.last() == Some(&IAC) {
            out.push(IAC);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `input` in one call after another as a caller would; returns the data and,
    /// for each break, how much data came before it.
    fn feed(decoder: &mut Decoder, mut input: &[u8], data: &mut Vec<u8>, breaks: &mut Vec<usize>) {
        while !input.is_empty() {
            let (used, event) = decoder.decode(input, data);
            assert!(used > 0 && used <= input.len());
            if event == Some(Event::Break) {
                breaks.push(data.len());
            }
            input = &input[used..];
        }
    }

    fn decoded(input: &[u8]) -> (Vec<u8>, Vec<usize>) {
        let (mut data, mut breaks) = (Vec::new(), Vec::new());
        feed(&mut Decoder::new(), input, &mut data, &mut breaks);
        (data, breaks)
    }

    #[test]
    fn negotiation_is_qemus() {
        let qemu = [
            0xff, 0xfb, 0x01, 0xff, 0xfb, 0x03, 0xff, 0xfb, 0x00, 0xff, 0xfd, 0x00,
        ];
        assert_eq!(NEGOTIATION, qemu);
    }

    #[test]
    fn iac_iac_is_one_data_byte_255() {
        assert_eq!(
            decoded(b"a\xff\xffb\xff\xff"),
            (b"a\xffb\xff".to_vec(), vec![])
        );
    }

    #[test]
    fn option_negotiation_is_dropped_with_its_option() {
        for verb in [WILL, WONT, DO, DONT] {
            // The option byte is taken as such even when it is IAC, CR or a command's code.
            for option in [BINARY, ECHO, 31, IAC, CR, BRK, SE] {
                let input = [b'a', IAC, verb, option, b'b'];
                assert_eq!(decoded(&input), (b"ab".to_vec(), vec![]), "{verb} {option}");
            }
        }
    }

    #[test]
    fn subnegotiation_is_dropped_whole() {
        // NAWS 255x24, whose 255 is doubled inside, then a terminal type.
        let naws = [IAC, SB, 31, 0, IAC, IAC, 0, 24, IAC, SE];
        let ttype = [IAC, SB, 24, 0, b'x', b't', b'e', b'r', b'm', b'\r', IAC, SE];
        let input = [&b"a"[..], &naws, b"b", &ttype, b"c"].concat();
        assert_eq!(decoded(&input), (b"abc".to_vec(), vec![]));
    }

    #[test]
    fn a_command_inside_a_subnegotiation_ends_it() {
        let input = [
            IAC, SB, 24, b'x', IAC, BRK, b'a', IAC, SB, 1, IAC, 241, b'b',
        ];
        assert_eq!(decoded(&input), (b"ab".to_vec(), vec![0]));
    }

    #[test]
    fn break_is_an_event_in_its_place() {
        let input = [b'a', b'b', IAC, BRK, b'c', IAC, BRK];
        let mut data = Vec::new();
        let mut decoder = Decoder::new();
        assert_eq!(decoder.decode(&input, &mut data), (4, Some(Event::Break)));
        assert_eq!(data, b"ab");
        assert_eq!(decoded(&input), (b"abc".to_vec(), vec![2, 3]));
    }

    #[test]
    fn other_commands_are_dropped_and_keep_the_next_byte() {
        // NOP, IP, AYT, GA, a stray SE: QEMU would eat the byte after each.
        for command in [241, 244, 246, 249, SE] {
            let input = [b'a', IAC, command, b'b'];
            assert_eq!(decoded(&input), (b"ab".to_vec(), vec![]), "{command}");
        }
    }

    #[test]
    fn cr_nul_is_cr() {
        assert_eq!(
            decoded(b"a\r\0b\r\nc\r\r\0\0"),
            (b"a\rb\r\nc\r\r\0".to_vec(), vec![])
        );
        // Only a NUL right after a data CR: not after an escaped 255, nor after IAC.
        assert_eq!(decoded(&[0, IAC, IAC, 0, IAC, 241, 0]).0, [0, IAC, 0, 0]);
        let input = [CR, IAC, IAC, 0];
        assert_eq!(decoded(&input).0, [CR, IAC, 0]);
    }

    #[test]
    fn a_sequence_split_anywhere_decodes_as_in_one_read() {
        let input = [
            &b"ab\r\0c"[..],
            &[IAC, IAC, IAC, WILL, 31, IAC, DO, IAC, IAC, BRK, b'\r'],
            &[
                IAC, SB, 31, 0, IAC, IAC, 0, 24, IAC, SE, b'd', IAC, 241, b'e', b'\r', 0,
            ],
            &[IAC, SB, 24, IAC, BRK, b'f', IAC, DONT, 1, IAC],
        ]
        .concat();
        let whole = decoded(&input);
        assert_eq!(whole, (b"ab\rc\xff\rde\rf".to_vec(), vec![5, 9]));
        for at in 0..=input.len() {
            let (mut data, mut breaks) = (Vec::new(), Vec::new());
            let mut decoder = Decoder::new();
            feed(&mut decoder, &input[..at], &mut data, &mut breaks);
            feed(&mut decoder, &input[at..], &mut data, &mut breaks);
            assert_eq!((data, breaks), whole, "split at {at}");
        }
        let (mut data, mut breaks) = (Vec::new(), Vec::new());
        let mut decoder = Decoder::new();
        for byte in input.chunks(1) {
            feed(&mut decoder, byte, &mut data, &mut breaks);
        }
        assert_eq!((data, breaks), whole, "byte by byte");
    }

    #[test]
    fn encode_doubles_every_255() {
        let mut out = vec![7];
        encode(&[1, IAC, 2, IAC, IAC], &mut out);
        assert_eq!(out, [7, 1, IAC, IAC, 2, IAC, IAC, IAC, IAC]);
        let mut out = Vec::new();
        encode(b"", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn every_byte_value_survives_encode_then_decode() {
        // Ascending, so no CR is followed by a NUL, the one pair not kept by design.
        let all: Vec<u8> = (0..=255).collect();
        for data in [&all[..], &[IAC], &[IAC, IAC, IAC]] {
            let mut wire = Vec::new();
            encode(data, &mut wire);
            assert_eq!(decoded(&wire), (data.to_vec(), vec![]));
        }
    }
}
