import TetherWire
import Testing

@Suite struct SettingsTests {
    @Test func defaultsAreTheSpecDefaults() {
        let settings = Settings()
        #expect(settings.maxFramePayload == 16_375)
        #expect(settings.maxOpenSize == 4_096)
        #expect(settings.initialStreamCredit == 262_144)
        #expect(settings.initialConnectionCredit == 4_194_304)
        #expect(settings.initialStreams[.bulk] == 256)
        #expect(settings.compression.contains(.deflate))
        #expect(settings.keepaliveIntervalMilliseconds == 15_000)
    }

    @Test func entriesRoundTrip() throws {
        var settings = Settings()
        settings.initialStreams[.logs] = 9
        settings.instanceID = 77
        settings.compression = .empty
        #expect(try Settings(validating: settings.entries) == settings)
    }

    /// spec §3.3 `IMPLEMENTATION_VERSION`: sent only when said, packed major·2¹⁶ + minor·2⁸ + patch.
    @Test func implementationVersionIsSentOnlyWhenSaid() throws {
        var settings = Settings()
        #expect(!settings.entries.contains { $0.id == .implementationVersion })
        settings.implementationVersion = TetherRelease.packed
        #expect(settings.entries.last == Setting(.implementationVersion, TetherRelease.packed))
        #expect(try Settings(validating: settings.entries).implementationVersion == TetherRelease.packed)
        #expect(TetherRelease.version(packed: TetherRelease.packed) == TetherRelease.version)
        #expect(TetherRelease.version(packed: 0x01_0203) == "1.2.3")
        #expect(TetherRelease.version(packed: 0) == nil)
    }

    @Test func absentSettingsTakeDefaultsAndUnknownIdsAreIgnored() throws {
        let settings = try Settings(validating: [Setting(SettingID(rawValue: 0x99), 1)])
        #expect(settings == Settings())
    }

    /// spec §3.4: the highest common version, or none.
    @Test func versionNegotiation() {
        var a = Settings()
        var b = Settings()
        #expect(Settings.negotiateVersion(a, b) == 1)
        a.versionMax = 3
        b.versionMax = 2
        #expect(Settings.negotiateVersion(a, b) == 2)
        a.versionMin = 3
        #expect(Settings.negotiateVersion(a, b) == nil)
    }

    @Test func compressionSetMapsIdsToBits() {
        var set = CompressionSet.empty
        #expect(set.contains(.none))
        #expect(!set.contains(.deflate))
        set.insert(.deflate)
        #expect(set.rawValue == 1)
        #expect(set.contains(.deflate))
        #expect(!set.contains(CompressionAlgorithm(rawValue: 2)))
        #expect(!CompressionSet(rawValue: .max).contains(CompressionAlgorithm(rawValue: 33)))
    }
}
